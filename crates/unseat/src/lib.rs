//! unseat unseat
