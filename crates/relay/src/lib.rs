//! unseat relay
