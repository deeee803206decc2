//! Identities and access control: users and password hashing, access tokens, namespaces'
//! roles and permissions, token scopes, signed bearer tokens, and login throttling. The HTTP
//! layer's gate (`http::auth`) puts these together on each request.

pub mod authn;
pub mod jwt;
pub mod namespaces;
pub mod password;
pub mod perms;
pub mod policy;
pub mod scope;
pub mod shared_throttle;
pub mod throttle;
pub mod tokens;
pub mod users;

pub use authn::{AuthError, Authenticator, Identity};
pub use perms::{Perms, Role, TokenAccess};
pub use policy::{namespace_of, valid_namespace, Authorizer, OpenPull, Principal, Visibility};
pub use scope::Scope;
pub use users::{UserError, UserName, Users};
