//! unseat connector
