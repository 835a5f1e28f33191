//! Device models. Each sits behind the [`bus::PortIoDevice`] trait; none makes KVM calls.

pub mod bus;
pub mod debugcon;
pub mod hypercall;
pub mod i8042;
pub mod serial;

pub use bus::{GuestCpu, GuestStop, IoAction, PortBus, PortIoDevice};
