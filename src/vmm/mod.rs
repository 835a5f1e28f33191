//! The machine: one [`vm::Vm`] per guest, with its memory, its vCPU and its devices.

pub mod exit;
pub mod group;
pub mod kvm;
pub mod memory;
pub mod snapshot;
pub mod stats;
pub mod vcpu;
pub mod vm;
