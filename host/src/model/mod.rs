//! The l7mp object model: flat, name-keyed tables of immutable objects that refer to
//! each other by name. A [`Snapshot`] is one consistent configuration; changes build a
//! new snapshot and swap it in whole (see [`crate::proxy`]).

pub mod bounds;
pub mod error;
pub mod inline;
pub mod objects;
pub mod parse;
pub mod render;
pub mod view;

pub use error::{ConfigError, Result};
pub use objects::*;
