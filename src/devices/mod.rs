//! Device models. Each sits behind the [`bus::BusDevice`] trait and sees only offsets within its
//! range; none makes KVM calls or sees a vCPU: a device's only link to KVM is its [`IrqLine`].
//! `devices` imports nothing above it (only `arch` and the console it prints to).

pub mod acpi_pm;
pub mod bus;
pub mod display;
#[cfg(test)]
mod fuzz;
pub mod fw_cfg;
pub mod hypercall;
pub mod irq;
pub mod legacy;
pub mod state;
pub mod virtio;

pub use bus::{
    Access, AddressSpace, Bus, BusDevice, BusError, BusRange, GuestStop, IoAction, SharedDevice,
};
pub use irq::IrqLine;
pub use state::DeviceState;
