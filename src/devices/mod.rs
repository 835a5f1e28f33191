//! Device models. Each sits behind the [`bus::PortIoDevice`] trait; none makes KVM calls: a
//! device's only link to KVM is its [`IrqLine`].

pub mod bus;
pub mod debug_exit;
pub mod debugcon;
pub mod hypercall;
pub mod i8042;
pub mod irq;
pub mod scancodes;
pub mod serial;

pub use bus::{GuestCpu, GuestStop, IoAction, PortBus, PortIoDevice};
pub use irq::IrqLine;
