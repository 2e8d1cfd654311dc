//! unseat console
