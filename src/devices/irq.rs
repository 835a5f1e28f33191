//! A device's interrupt line, as the device sees it: something it can raise, nothing more.
//!
//! The VMM connects each line to the in-kernel interrupt controller with an *irqfd*
//! (`KVM_IRQFD`): an eventfd that KVM watches. Raising the line is a `write(2)` of 1 to that
//! eventfd; KVM then pulses the interrupt input (GSI) on the PIC and the IOAPIC. So a device never
//! holds a VM file descriptor and never makes a KVM call, and it may raise its line from any
//! thread (the keyboard's input thread does).
//!
//! A guest without an interrupt controller (a real-mode flat binary without `--irqchip`) gets
//! disconnected lines: raising them does nothing, as on a PC whose PIC masks everything.

use std::sync::Arc;

use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

#[derive(Clone)]
pub struct IrqLine {
    irq: u32,
    event: Option<Arc<EventFd>>,
}

impl IrqLine {
    /// A line wired to KVM through `event` (already registered as an irqfd for `irq`).
    pub fn connected(irq: u32, event: EventFd) -> IrqLine {
        IrqLine {
            irq,
            event: Some(Arc::new(event)),
        }
    }

    /// A line going nowhere.
    pub fn disconnected(irq: u32) -> IrqLine {
        IrqLine { irq, event: None }
    }

    pub fn irq(&self) -> u32 {
        self.irq
    }

    pub fn is_connected(&self) -> bool {
        self.event.is_some()
    }

    /// Pulses the line: the interrupt controller latches an edge.
    pub fn raise(&self) {
        if let Some(event) = &self.event {
            // Only fails if the counter would overflow (2^64 - 2 pending raises): then the
            // interrupt is pending anyway.
            let _ = event.write(1);
        }
    }
}

/// vm-superio's UART raises its interrupt through this trait.
impl Trigger for IrqLine {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.raise();
        Ok(())
    }
}
