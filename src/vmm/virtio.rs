//! Wiring virtio devices into the machine: each in its fixed slot (arch/x86/layout.rs) with
//! its IRQ on an irqfd, and an ioeventfd per queue whose signal the VM's event loop turns into
//! [`MmioTransport::notify`]. So a request costs the guest no VM exit at all: its doorbell
//! write ends in KVM, the work happens on the event-loop thread, and the interrupt goes back
//! through KVM.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::device_manager::{DeviceError, DeviceManager};
use super::event_loop::EventHandler;
use crate::arch::x86::layout::{VIRTIO_FIRST_IRQ, VIRTIO_MMIO_START, VIRTIO_SLOT_SIZE};
use crate::devices::virtio::mmio::{EmptySlot, MmioTransport, Notified};
use crate::devices::virtio::{SLOTS, VirtioDevice};
use crate::devices::{AddressSpace, BusRange, bus};

/// The QueueNotify register's offset in a transport's window.
const QUEUE_NOTIFY: u64 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY as u64;

/// Puts `devices` in the slots, in order, and empty transports in the other slots. At most
/// [`SLOTS`] devices: the configuration checks it first, and a library caller that gives more
/// gets an error, not a device silently left out.
pub fn attach_virtio(
    manager: &mut DeviceManager,
    memory: &GuestMemoryMmap,
    devices: Vec<Box<dyn VirtioDevice>>,
) -> Result<(), DeviceError> {
    if let Some(extra) = devices.get(SLOTS) {
        return Err(DeviceError::NoVirtioSlot {
            device: extra.name(),
            slots: SLOTS,
        });
    }
    let mut devices = devices.into_iter();
    for slot in 0..SLOTS {
        let window = BusRange::new(
            VIRTIO_MMIO_START + slot as u64 * VIRTIO_SLOT_SIZE,
            VIRTIO_SLOT_SIZE,
        );
        let Some(device) = devices.next() else {
            manager.attach_mmio_at(bus::shared(EmptySlot), window, None)?;
            continue;
        };
        let irq = VIRTIO_FIRST_IRQ + slot as u32;
        let line = manager.legacy_irq(irq, device.name())?;
        let transport = Arc::new(Mutex::new(MmioTransport::new(
            device,
            slot,
            memory.clone(),
            line,
        )));
        let (queues, input) = transport
            .lock()
            .map_or((0, None), |t| (t.queue_count(), t.input_source()));
        manager.attach_mmio_at(transport.clone(), window, Some(irq))?;
        for queue in 0..queues {
            let event = manager.ioeventfd(
                AddressSpace::Mmio,
                window.base + QUEUE_NOTIFY,
                Some(queue as u32),
            )?;
            manager.add_event_handler(Box::new(QueueNotifier {
                transport: Arc::clone(&transport),
                queue,
                event,
            }));
        }
        if let Some((fd, queue)) = input {
            manager.add_event_handler(Box::new(InputNotifier {
                transport: Arc::clone(&transport),
                queue,
                fd,
            }));
        }
    }
    Ok(())
}

/// A device's host descriptor (a TAP device): when it becomes readable, the queue it feeds has
/// work. Edge-triggered: the device reads until it has no room left, and the driver's next
/// doorbell on that queue resumes it, so a guest that gives no buffers never makes the event
/// loop spin.
struct InputNotifier {
    transport: Arc<Mutex<MmioTransport>>,
    queue: usize,
    fd: RawFd,
}

impl EventHandler for InputNotifier {
    fn fd(&self) -> RawFd {
        self.fd
    }

    fn edge_triggered(&self) -> bool {
        true
    }

    fn ready(&mut self) {
        let mut transport = self
            .transport
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Edge-triggered: all there is must be taken now, a turn's worth at a time.
        while transport.notify(self.queue) == Notified::MorePending {}
    }
}

/// One queue's doorbell: KVM signals `event` when the guest writes the queue's index to
/// QueueNotify.
struct QueueNotifier {
    transport: Arc<Mutex<MmioTransport>>,
    queue: usize,
    event: EventFd,
}

impl EventHandler for QueueNotifier {
    fn fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }

    fn ready(&mut self) {
        // Several doorbell writes since the last turn read as one: the device takes whatever
        // the available ring holds.
        let _ = self.event.read();
        let notified = self
            .transport
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .notify(self.queue);
        if notified == Notified::MorePending {
            // Come back on the next turn of the loop, after the other descriptors.
            let _ = self.event.write(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestAddress;

    use super::*;
    use crate::devices::virtio::rng::Rng;

    #[test]
    fn a_ninth_device_is_an_error_not_left_out() {
        let kvm = kvm_ioctls::Kvm::new().expect("this test needs /dev/kvm (docs/testing.md)");
        let vm_fd = Arc::new(kvm.create_vm().unwrap());
        let mut manager = DeviceManager::new(vm_fd, false);
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let devices: Vec<Box<dyn VirtioDevice>> = (0..=SLOTS)
            .map(|_| Box::new(Rng::new()) as Box<dyn VirtioDevice>)
            .collect();
        let error = attach_virtio(&mut manager, &memory, devices).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no virtio slot is left for virtio-rng: a guest has 8 (each --disk and --net takes \
             one, and --rng one)"
        );
        // Eight fit: every slot holds one, with its IRQ, and nothing is left empty.
        let devices: Vec<Box<dyn VirtioDevice>> = (0..SLOTS)
            .map(|_| Box::new(Rng::new()) as Box<dyn VirtioDevice>)
            .collect();
        attach_virtio(&mut manager, &memory, devices).unwrap();
        let irqs: Vec<Option<u32>> = manager.devices().iter().map(|d| d.irq).collect();
        assert_eq!(irqs, (5..13).map(Some).collect::<Vec<_>>());
        assert!(manager.devices().iter().all(|d| d.name == "virtio-rng"));
        assert_eq!(
            manager.devices()[7].mmio,
            vec![BusRange::new(0xd000_7000, 0x1000)]
        );
    }
}
