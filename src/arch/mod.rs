//! x86 CPU state, nothing else: how the registers look when a guest starts in each mode.

pub mod modes;

pub use modes::CpuMode;
