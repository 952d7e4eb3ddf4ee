pub mod jwks;
