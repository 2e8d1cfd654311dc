//! unseat resolver
