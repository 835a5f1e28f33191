//! The PC's legacy devices, at the ports and IRQs every PC has them: the 16550 UART (COM1), the
//! i8042 keyboard controller, the Bochs/QEMU debug console and QEMU's isa-debug-exit.

pub mod debug_exit;
pub mod debugcon;
pub mod i8042;
pub mod scancodes;
pub mod serial;
