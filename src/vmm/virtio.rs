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
            let address = window.base + QUEUE_NOTIFY;
            let event = manager.ioeventfd(AddressSpace::Mmio, address, Some(queue as u32))?;
            if let Some((fd, input_queue)) = input
                && input_queue == queue
            {
                let doorbell = event
                    .try_clone()
                    .map_err(|source| DeviceError::Ioeventfd { address, source })?;
                manager.add_event_handler(Box::new(InputNotifier {
                    transport: Arc::clone(&transport),
                    queue,
                    fd,
                    doorbell,
                }));
            }
            manager.add_event_handler(Box::new(QueueNotifier {
                transport: Arc::clone(&transport),
                queue,
                event,
            }));
        }
    }
    Ok(())
}

/// A device's host descriptor (a TAP device): when it becomes readable, the queue it feeds has
/// work. Edge-triggered: the device reads until it has no room left, and the driver's next
/// doorbell on that queue resumes it, so a guest that gives no buffers never makes the event
/// loop spin. One readiness gets one turn, like a doorbell: what a turn leaves is taken on the
/// queue's own doorbell (`doorbell`, a second handle on its ioeventfd), which the handler
/// rings, so that the event loop sees its deadline and its other descriptors in between.
struct InputNotifier {
    transport: Arc<Mutex<MmioTransport>>,
    queue: usize,
    fd: RawFd,
    doorbell: EventFd,
}

impl EventHandler for InputNotifier {
    fn fd(&self) -> RawFd {
        self.fd
    }

    fn edge_triggered(&self) -> bool {
        true
    }

    fn ready(&mut self) {
        let notified = self
            .transport
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .notify(self.queue);
        // Edge-triggered: the descriptor will not be reported again for frames already there,
        // so the rest must be taken on a later turn through the doorbell, which keeps ringing
        // itself (QueueNotifier) until the frames or the buffers run out.
        if notified == Notified::MorePending {
            let _ = self.doorbell.write(1);
        }
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
        // Several doorbell writes since the last turn read as one: the device takes a turn's
        // worth of what the available ring holds.
        let _ = self.event.read();
        let notified = self
            .transport
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .notify(self.queue);
        if notified == Notified::MorePending {
            // Come back on the next turn of the loop, after the other descriptors and the
            // loop's check of its deadline (event_loop.rs, Watcher::watch), which a doorbell that keeps
            // ringing itself cannot skip: each wait returns at most one turn per descriptor.
            let _ = self.event.write(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestAddress;

    use super::*;
    use crate::devices::virtio::rng::Rng;

    /// A TAP device with more frames than one turn may move: its handler does one turn (65
    /// frames of 65,000 bytes: the turn's 4 MiB and the frame that crossed it) and rings the
    /// receive queue's doorbell for the rest, so that the event loop sees its deadline and its
    /// other descriptors in between; the doorbell's turn takes the rest. It used to loop on the
    /// event loop's thread while frames and buffers lasted: as long as a busy host and a guest
    /// that keeps refilling its buffers liked. Needs root (a network namespace, a TAP device).
    #[test]
    fn a_busy_tap_device_gets_one_turn_per_wake_up() {
        use crate::devices::virtio::FEATURE_VERSION_1;
        use crate::devices::virtio::net::{HEADER_SIZE, Net, RECEIVE_QUEUE};
        use crate::devices::virtio::tap::Tap;
        use crate::devices::virtio::tests::{BUFFERS, Driver, bring_up, packet_socket, set_mtu};

        const FRAME: usize = 65_000;
        std::thread::spawn(|| {
            // SAFETY: unshare(2) moves only this thread into a new network namespace.
            let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                unshared,
                0,
                "this test needs root, for a network namespace and a TAP device: {}",
                std::io::Error::last_os_error()
            );
            // Fewer frames of the host's own (IPv6 neighbour discovery) in the guest's buffers.
            let _ = std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
            let tap = Tap::open("mkvm0", HEADER_SIZE).unwrap();
            set_mtu("mkvm0", 65_500);
            bring_up("mkvm0");
            let host = packet_socket("mkvm0");
            let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
            let features = FEATURE_VERSION_1 | 1 << 5; // VIRTIO_NET_F_MAC
            let mut driver = Driver::new(Box::new(Net::new(tap, mac)), features).ready();
            let (tap_fd, _) = driver.transport().input_source().unwrap();
            // 120 buffers, all on one piece of guest memory: room for every frame.
            driver.offer_single_buffers(RECEIVE_QUEUE, 120, BUFFERS, 70_000);
            let mut frame = vec![0xff; 6];
            frame.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
            frame.extend_from_slice(&0x88b5u16.to_be_bytes());
            frame.resize(FRAME, 0x77);
            for _ in 0..100 {
                // SAFETY: send from `frame`, its length.
                let n = unsafe { libc::send(host.as_raw_fd(), frame.as_ptr().cast(), FRAME, 0) };
                assert_eq!(n, FRAME as isize, "{}", std::io::Error::last_os_error());
            }
            let doorbell = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            let mut notifier = InputNotifier {
                transport: Arc::clone(&driver.transport),
                queue: RECEIVE_QUEUE,
                fd: tap_fd,
                doorbell: doorbell.try_clone().unwrap(),
            };
            // The frames of 65,000 bytes (with the virtio-net header) a turn put in buffers.
            let ours = |driver: &mut Driver| {
                std::iter::from_fn(|| driver.take_used(RECEIVE_QUEUE))
                    .filter(|&(_, len)| len as usize == HEADER_SIZE + FRAME)
                    .count()
            };
            notifier.ready();
            assert_eq!(ours(&mut driver), 65);
            assert_eq!(
                doorbell.read().ok(),
                Some(1),
                "the doorbell rung for the rest"
            );
            assert_eq!(driver.notify(RECEIVE_QUEUE), Notified::Done);
            assert_eq!(ours(&mut driver), 35);
        })
        .join()
        .unwrap();
    }

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
