//! CPU and platform facts, nothing that runs: where everything is in guest-physical memory, how
//! the registers look when a guest starts in each mode, and the tables that state points at.
//! Only x86 today; `arch` imports nothing above it.

pub mod x86;

pub use x86::{ArchError, CpuMode};
