//! mini-kvm: a small, readable x86 virtual machine monitor on the Linux KVM API.
//!
//! Data flows one way (docs/architecture in DESIGN.md §2):
//! [`config`] → [`loader`] → [`vmm`] (memory, [`arch`] state, [`devices`]) → vCPU run loop →
//! port bus → device → [`console`].

pub mod arch;
pub mod config;
pub mod console;
pub mod devices;
pub mod loader;
pub mod terminal;
pub mod vmm;

use std::borrow::Cow;

use config::{GuestImage, RunConfig};
use vmm::vm::{GuestIo, GuestSetup, RunReport, Vm, VmError};

/// Runs one guest from start to end: read its image, open KVM, build the VM, run it.
pub fn run_guest(config: &RunConfig, io: GuestIo) -> Result<RunReport, VmError> {
    let image: Cow<'static, [u8]> = match &config.guest {
        GuestImage::Builtin(guest) => Cow::Borrowed(guest.image),
        GuestImage::File(path) => Cow::Owned(loader::read_image_file(path)?),
    };
    let name = config.guest.name();
    let flat_mode = config.flat_mode()?;
    let kvm = vmm::kvm::open_kvm()?;
    let setup = GuestSetup {
        name: &name,
        image: &image,
        load: loader::LoadOptions {
            flat_mode,
            cmdline: config.cmdline.as_deref(),
        },
        memory_size: config.memory_size,
        irqchip: config.irqchip,
        verbose: config.verbose,
        terminal: config.terminal,
    };
    Vm::create(&kvm, &setup, io)?.run(config.timeout)
}
