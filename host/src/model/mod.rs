//! The l7mp object model: flat, name-keyed tables of immutable objects that refer to
//! each other by name. A [`Snapshot`] is one consistent configuration; changes build a
//! new snapshot and swap it in whole (the proxy does, at the composition root).

pub mod auth;
pub mod config;
pub mod inline;
pub mod objects;
pub mod render;
pub mod view;

pub use crate::core::error::{ConfigError, Result};
pub use objects::*;
