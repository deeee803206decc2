//! Identities: user names and password hashing. Request authentication and authorization
//! build on these.

pub mod password;
pub mod users;

pub use users::{UserError, UserName, Users};
