//! Shared harness for unseat end-to-end tests.
