//! unseat ingest
