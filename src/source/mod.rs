//! Where resources come from. A source only turns the outside world into
//! [`crate::config::Resources`]; it never decides routing.

pub mod file;
