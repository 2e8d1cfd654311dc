//! unseat scim
