//! The FlashLM v4 "Bolt" model in burn.
//!
//! Not built yet: the model lands with issue 3 (this crate exists so the workspace has its
//! final shape; it exports nothing).
