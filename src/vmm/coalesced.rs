//! Coalesced I/O for output-only ports (the UART's transmit register, the debug console: the
//! devices declare them, see `BusDevice::coalesced_offsets`).
//!
//! KVM can queue writes to them on a ring shared with us instead of exiting for each byte
//! (KVM_REGISTER_COALESCED_MMIO with a port-I/O zone, KVM_CAP_COALESCED_PIO): `hello` then needs
//! 2 exits instead of 13. The zones are registered at the guest's first write to one of these
//! ports, not at creation: registering one leaves KVM with an SRCU grace period that a VM
//! destroyed within ~20 ms waits for (measured: 15 ms at teardown, docs/benchmarks.md), a cost
//! only guests that print should pay.
//!
//! The ring is the VM's, one for all its vCPUs: whichever vCPU exits drains it, under a lock, so
//! the writes reach their devices once and in the order the guest made them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kvm_ioctls::{IoEventAddress, VmFd};

pub struct OutputCoalescing {
    vm_fd: Arc<VmFd>,
    ports: Vec<u64>,
    registered: AtomicBool,
    /// Held while a vCPU drains the ring.
    draining: Mutex<()>,
}

impl OutputCoalescing {
    /// Coalescing for `ports`; `None` when there are none.
    pub fn new(vm_fd: &Arc<VmFd>, ports: Vec<u64>) -> Option<Arc<OutputCoalescing>> {
        (!ports.is_empty()).then(|| {
            Arc::new(OutputCoalescing {
                vm_fd: Arc::clone(vm_fd),
                ports,
                registered: AtomicBool::new(false),
                draining: Mutex::new(()),
            })
        })
    }

    /// The guest wrote to `port` (an exit): from the first write to an output-only port on,
    /// later writes to them go to the ring.
    pub fn note_write(&self, port: u64) {
        if self.registered.load(Ordering::Acquire) || !self.ports.contains(&port) {
            return;
        }
        if self.registered.swap(true, Ordering::AcqRel) {
            return;
        }
        for &port in &self.ports {
            // If KVM refuses a zone, writes to that port simply keep exiting.
            let _ = self
                .vm_fd
                .register_coalesced_mmio(IoEventAddress::Pio(port), 1);
        }
    }

    /// Whether the ring can hold entries (and must be drained).
    pub fn active(&self) -> bool {
        self.registered.load(Ordering::Acquire)
    }

    /// The right to drain the ring, for one vCPU at a time.
    pub fn lock_ring(&self) -> MutexGuard<'_, ()> {
        self.draining
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
