//! Host capabilities, one module and one WIT import each, with its checks.
//! They are linked in one auditable list, [`crate::runtime::linker`].

pub mod canary;
pub mod clock;
pub mod denials;
pub mod kernel;
pub mod log;
pub mod no_blocking;
pub mod shadow;
pub mod state;
pub mod sysctl;
pub mod system;
pub mod tcp;
