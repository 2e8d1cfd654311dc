//! SCIM 2.0 (RFC 7643/7644) as unseat's ingest needs it, with no I/O: parsing Users and
//! Groups, PATCH semantics (including the shapes Okta and Entra ID send), filters, list
//! responses, discovery documents and the SCIM error body.
//!
//! `unseat-ingest` calls into this crate from its HTTP handlers and keeps the results in
//! `unseat-store`; nothing here knows about HTTP, Postgres or tokio.

pub mod error;
pub mod filter;
pub mod group;
pub mod list;
pub mod patch;
pub mod projection;
#[cfg(test)]
mod proptests;
pub mod schema;
pub mod text;
pub mod user;

pub use error::ScimError;
pub use filter::{AttrPath, CompareOp, Elements, Filter};
pub use group::Group;
pub use list::{list_response, Page};
pub use patch::{apply_user_patch, group_patch, MemberChange, OpKind, PatchOperation, PatchPath, PatchRequest};
pub use projection::{project, AttrList};
pub use text::check_storable;
pub use user::{Email, User};
