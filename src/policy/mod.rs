pub mod jwks;
pub mod jwt;
