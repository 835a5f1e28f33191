//! One VM exit in, one action out: the part of the run loop that decides, as a plain function
//! ([`handle_exit`]) that the unit tests below feed made-up exits.
//!
//! The vCPU (vcpu.rs) copies each exit out of `kvm_run` into a [`VmExit`], calls
//! [`handle_exit`], and carries out the [`ExitAction`]: complete a read, run a hypercall, stop
//! the guest, or report a fault. Port and MMIO accesses go to the buses; the loop itself knows no
//! addresses.

use super::outcome::Fault;
use super::stats::ExitStats;
use crate::devices::{Access, Bus, GuestStop, IoAction};

/// An exit, copied out of `kvm_run`. The data of an access is in the vCPU's data buffer: what
/// the guest wrote, or where a read's answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    IoIn {
        port: u16,
        len: usize,
    },
    IoOut {
        port: u16,
        len: usize,
    },
    MmioRead {
        address: u64,
        len: usize,
    },
    MmioWrite {
        address: u64,
        len: usize,
    },
    Hlt,
    Shutdown,
    /// KVM_EXIT_DEBUG: a single-step, a breakpoint or a watchpoint the debugger set (vmm/debug.rs).
    Debug {
        exception: u32,
        dr6: u64,
    },
    InternalError {
        suberror: u32,
    },
    FailEntry {
        reason: u64,
    },
    /// KVM_RUN returned EINTR: a signal kicked the vCPU out (to pause or stop it).
    Interrupted,
    Other {
        reason: String,
    },
    RunFailed {
        error: String,
    },
}

impl VmExit {
    /// The name in traces and statistics.
    pub fn reason(&self) -> &'static str {
        match self {
            VmExit::IoIn { .. } => "IO_IN",
            VmExit::IoOut { .. } => "IO_OUT",
            VmExit::MmioRead { .. } | VmExit::MmioWrite { .. } => "MMIO",
            VmExit::Hlt => "HLT",
            VmExit::Debug { .. } => "DEBUG",
            VmExit::Shutdown => "SHUTDOWN",
            VmExit::InternalError { .. } => "INTERNAL_ERROR",
            VmExit::FailEntry { .. } => "FAIL_ENTRY",
            VmExit::Interrupted => "INTR",
            VmExit::Other { .. } => "OTHER",
            VmExit::RunFailed { .. } => "RUN_FAILED",
        }
    }

    /// A read, whose answer a trace can show only after it was handled.
    pub fn is_read(&self) -> bool {
        matches!(self, VmExit::IoIn { .. } | VmExit::MmioRead { .. })
    }

    /// The number of data bytes the exit carries.
    pub fn data_len(&self) -> usize {
        match self {
            VmExit::IoIn { len, .. }
            | VmExit::IoOut { len, .. }
            | VmExit::MmioRead { len, .. }
            | VmExit::MmioWrite { len, .. } => *len,
            _ => 0,
        }
    }
}

/// What the vCPU does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitAction {
    /// Enter the guest again.
    Resume,
    /// A read was answered: hand the data to KVM, then resume.
    CompleteRead,
    /// The guest rang the hypercall doorbell with this call number.
    Hypercall(u8),
    /// A device stopped the guest.
    Stop(GuestStop),
    /// `hlt` without an in-kernel irqchip: the end of the guest if interrupts are off, a guest
    /// that can never wake if they are on (the vCPU looks at RFLAGS.IF).
    Halt,
    /// A kick: see whether the run is being paused or stopped.
    Kicked,
    /// The guest cannot go on.
    Fault(Fault),
}

/// The two buses of a machine.
pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

/// The "direction" of accesses in the statistics.
pub const IN: &str = "in";
pub const OUT: &str = "out";
pub const READ: &str = "read";
pub const WRITE: &str = "write";

/// Decides what an exit means. Accesses are dispatched to `buses` (a read fills `data`) and
/// counted in `stats`, unclaimed ones included.
pub fn handle_exit(
    exit: &VmExit,
    buses: &Buses,
    data: &mut [u8],
    stats: &mut ExitStats,
) -> ExitAction {
    match *exit {
        VmExit::IoIn { port, len } => {
            let access = buses.pio.read(u64::from(port), &mut data[..len]);
            stats.count_access(&buses.pio, u64::from(port), IN, &access);
            ExitAction::CompleteRead
        }
        VmExit::IoOut { port, len } => {
            let access = buses.pio.write(u64::from(port), &data[..len]);
            stats.count_access(&buses.pio, u64::from(port), OUT, &access);
            match access {
                Access::Claimed(_, action) => action_of(action),
                Access::Unclaimed => ExitAction::Resume,
            }
        }
        VmExit::MmioRead { address, len } => {
            let access = buses.mmio.read(address, &mut data[..len]);
            stats.count_access(&buses.mmio, address, READ, &access);
            match access {
                Access::Claimed(..) => ExitAction::CompleteRead,
                Access::Unclaimed => unhandled_mmio(address, false, len),
            }
        }
        VmExit::MmioWrite { address, len } => {
            let access = buses.mmio.write(address, &data[..len]);
            stats.count_access(&buses.mmio, address, WRITE, &access);
            match access {
                Access::Claimed(_, action) => action_of(action),
                Access::Unclaimed => unhandled_mmio(address, true, len),
            }
        }
        VmExit::Hlt => ExitAction::Halt,
        // The vCPU hands debug exits to its debugger; without one, nobody asked for them.
        VmExit::Debug { .. } => ExitAction::Fault(Fault::UnhandledExit {
            reason: "DEBUG".into(),
        }),
        VmExit::Interrupted => ExitAction::Kicked,
        VmExit::Shutdown => ExitAction::Fault(Fault::TripleFault),
        VmExit::InternalError { suberror } => {
            ExitAction::Fault(if suberror == kvm_bindings::KVM_INTERNAL_ERROR_EMULATION {
                Fault::EmulationFailure
            } else {
                Fault::InternalError { suberror }
            })
        }
        VmExit::FailEntry { reason } => ExitAction::Fault(Fault::FailedEntry { reason }),
        VmExit::Other { ref reason } => ExitAction::Fault(Fault::UnhandledExit {
            reason: reason.clone(),
        }),
        VmExit::RunFailed { ref error } => ExitAction::Fault(Fault::RunFailed {
            error: error.clone(),
        }),
    }
}

fn action_of(action: IoAction) -> ExitAction {
    match action {
        IoAction::Continue => ExitAction::Resume,
        IoAction::Stop(stop) => ExitAction::Stop(stop),
        IoAction::Hypercall(number) => ExitAction::Hypercall(number),
    }
}

/// MMIO outside RAM and outside every device: the guest cannot go on.
fn unhandled_mmio(address: u64, write: bool, len: usize) -> ExitAction {
    ExitAction::Fault(Fault::UnhandledMmio {
        address,
        write,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::hypercall::HypercallDoorbell;
    use crate::devices::legacy::debug_exit::{DEBUG_EXIT_PORTS, DebugExit};
    use crate::devices::{AddressSpace, BusDevice, BusRange, bus};

    /// A register file of 16 bytes at MMIO 0xd0000000 that echoes what was written.
    #[derive(Default)]
    struct Registers([u8; 16]);

    impl BusDevice for Registers {
        fn name(&self) -> &'static str {
            "registers"
        }
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            let at = offset as usize;
            data.copy_from_slice(&self.0[at..at + data.len()]);
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> IoAction {
            let at = offset as usize;
            self.0[at..at + data.len()].copy_from_slice(data);
            IoAction::Continue
        }
    }

    fn buses() -> Buses {
        let mut pio = Bus::new(AddressSpace::Pio);
        pio.insert(BusRange::new(0x500, 1), &bus::shared(HypercallDoorbell))
            .unwrap();
        pio.insert(DEBUG_EXIT_PORTS, &bus::shared(DebugExit))
            .unwrap();
        let mut mmio = Bus::new(AddressSpace::Mmio);
        mmio.insert(
            BusRange::new(0xd000_0000, 16),
            &bus::shared(Registers::default()),
        )
        .unwrap();
        Buses { pio, mmio }
    }

    #[test]
    fn a_write_to_the_doorbell_is_a_hypercall() {
        let (buses, mut stats) = (buses(), ExitStats::default());
        let mut data = [0x05];
        let exit = VmExit::IoOut {
            port: 0x500,
            len: 1,
        };
        let action = handle_exit(&exit, &buses, &mut data, &mut stats);
        assert_eq!(action, ExitAction::Hypercall(0x05));
        assert_eq!(stats.accesses_of(0x500, OUT), Some(("hypercall", 1)));
    }

    #[test]
    fn isa_debug_exit_stops_the_guest() {
        let (buses, mut stats) = (buses(), ExitStats::default());
        let mut data = [0x10, 0, 0, 0];
        let exit = VmExit::IoOut { port: 0xf4, len: 4 };
        let action = handle_exit(&exit, &buses, &mut data, &mut stats);
        assert_eq!(action, ExitAction::Stop(GuestStop::Exit(0x21)));
    }

    #[test]
    fn unclaimed_ports_read_as_ones_and_are_counted() {
        let (buses, mut stats) = (buses(), ExitStats::default());
        let mut data = [0u8; 2];
        let exit = VmExit::IoIn {
            port: 0x1234,
            len: 2,
        };
        assert_eq!(
            handle_exit(&exit, &buses, &mut data, &mut stats),
            ExitAction::CompleteRead
        );
        assert_eq!(data, [0xff, 0xff]);
        let out = VmExit::IoOut { port: 0x80, len: 1 };
        assert_eq!(
            handle_exit(&out, &buses, &mut [0x55], &mut stats),
            ExitAction::Resume
        );
        assert_eq!(stats.unclaimed_ports(IN), vec![(0x1234, 1)]);
        assert_eq!(stats.unclaimed_ports(OUT), vec![(0x80, 1)]);
    }

    #[test]
    fn mmio_goes_to_the_device_and_unclaimed_mmio_is_a_fault() {
        let (buses, mut stats) = (buses(), ExitStats::default());
        let write = VmExit::MmioWrite {
            address: 0xd000_0004,
            len: 4,
        };
        let mut data = [1, 2, 3, 4];
        assert_eq!(
            handle_exit(&write, &buses, &mut data, &mut stats),
            ExitAction::Resume
        );
        let read = VmExit::MmioRead {
            address: 0xd000_0004,
            len: 4,
        };
        let mut answer = [0u8; 4];
        assert_eq!(
            handle_exit(&read, &buses, &mut answer, &mut stats),
            ExitAction::CompleteRead
        );
        assert_eq!(answer, [1, 2, 3, 4]);
        let outside = VmExit::MmioRead {
            address: 0xd000_0010,
            len: 4,
        };
        assert_eq!(
            handle_exit(&outside, &buses, &mut answer, &mut stats),
            ExitAction::Fault(Fault::UnhandledMmio {
                address: 0xd000_0010,
                write: false,
                len: 4
            })
        );
    }

    #[test]
    fn faults_and_other_exits() {
        let (buses, mut stats) = (buses(), ExitStats::default());
        let mut handle = |exit: VmExit| handle_exit(&exit, &buses, &mut [], &mut stats);
        assert_eq!(
            handle(VmExit::Shutdown),
            ExitAction::Fault(Fault::TripleFault)
        );
        assert_eq!(
            handle(VmExit::InternalError {
                suberror: kvm_bindings::KVM_INTERNAL_ERROR_EMULATION
            }),
            ExitAction::Fault(Fault::EmulationFailure)
        );
        assert_eq!(
            handle(VmExit::InternalError { suberror: 3 }),
            ExitAction::Fault(Fault::InternalError { suberror: 3 })
        );
        assert_eq!(handle(VmExit::Hlt), ExitAction::Halt);
        assert_eq!(handle(VmExit::Interrupted), ExitAction::Kicked);
        assert_eq!(
            handle(VmExit::FailEntry { reason: 7 }),
            ExitAction::Fault(Fault::FailedEntry { reason: 7 })
        );
    }

    /// Each exit's name in traces and `--stats`, whether it is a read, and its data length:
    /// `--verbose` prints them and `--stats` counts by them (tests/tracing.rs checks them in
    /// whole runs; a table here names every kind). Found missing by `cargo mutants`.
    #[test]
    fn each_exit_has_its_name_direction_and_length() {
        let text = |reason: &str| reason.to_string();
        let exits = [
            (
                VmExit::IoIn {
                    port: 0x3f8,
                    len: 1,
                },
                "IO_IN",
                true,
                1,
            ),
            (
                VmExit::IoOut {
                    port: 0x500,
                    len: 2,
                },
                "IO_OUT",
                false,
                2,
            ),
            (
                VmExit::MmioRead {
                    address: 0xd000_0000,
                    len: 4,
                },
                "MMIO",
                true,
                4,
            ),
            (
                VmExit::MmioWrite {
                    address: 0xd000_0000,
                    len: 8,
                },
                "MMIO",
                false,
                8,
            ),
            (VmExit::Hlt, "HLT", false, 0),
            (
                VmExit::Debug {
                    exception: 1,
                    dr6: 0,
                },
                "DEBUG",
                false,
                0,
            ),
            (VmExit::Shutdown, "SHUTDOWN", false, 0),
            (
                VmExit::InternalError { suberror: 1 },
                "INTERNAL_ERROR",
                false,
                0,
            ),
            (VmExit::FailEntry { reason: 7 }, "FAIL_ENTRY", false, 0),
            (VmExit::Interrupted, "INTR", false, 0),
            (VmExit::Other { reason: text("x") }, "OTHER", false, 0),
            (
                VmExit::RunFailed { error: text("x") },
                "RUN_FAILED",
                false,
                0,
            ),
        ];
        for (exit, reason, is_read, len) in exits {
            assert_eq!(exit.reason(), reason, "{exit:?}");
            assert_eq!(exit.is_read(), is_read, "{exit:?}");
            assert_eq!(exit.data_len(), len, "{exit:?}");
        }
    }
}
