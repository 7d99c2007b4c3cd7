//! Command-line front ends beside `main.rs`, one module per desk.

pub mod gateway;
pub mod payments;
pub mod staff;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
