//! x86: the guest-physical layout, the register state a guest starts with in each mode, and the
//! descriptor and page tables that state points at.

pub mod acpi;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod modes;
pub mod mptable;
pub mod paging;

use thiserror::Error;

pub use modes::CpuMode;

#[derive(Debug, Error)]
pub enum ArchError {
    #[error("cannot write the VMM's tables into guest memory: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}
