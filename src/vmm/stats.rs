//! Counting VM exits: the `--stats` table, and the live counters the `--tui` view watches.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::devices::{Access, AddressSpace, Bus};

/// The "direction" under which writes drained from the coalesced-I/O ring are counted: they
/// are port writes that made no exit of their own.
pub const COALESCED: &str = "out, coalesced";
/// The device name of accesses no device answered.
pub const UNCLAIMED: &str = "unclaimed";

/// What other threads may watch while a guest runs: its exit count, and how it ended.
#[derive(Debug, Default)]
pub struct LiveCounters {
    exits: std::sync::atomic::AtomicU64,
    ended: std::sync::Mutex<Option<(u8, String)>>,
}

impl LiveCounters {
    pub fn count_exit(&self) {
        self.exits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn exits(&self) -> u64 {
        self.exits.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn finish(&self, status: u8, description: String) {
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some((status, description));
    }

    /// `None` while the guest runs; then its exit status and a short description.
    pub fn ended(&self) -> Option<(u8, String)> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Counts of VM exits and where the time went.
#[derive(Debug, Default, Clone)]
pub struct ExitStats {
    /// Exits by reason ("IO_OUT", "HLT", ...).
    pub by_reason: BTreeMap<&'static str, u64>,
    /// Port-I/O and MMIO accesses by (space, address, direction: "in"/"out"/"read"/"write"),
    /// with the device's name ("unclaimed" when none answered).
    pub by_access: BTreeMap<(AddressSpace, u64, &'static str), (&'static str, u64)>,
    /// Wall time inside KVM_RUN (guest code, plus what KVM handles in the kernel).
    pub in_guest: Duration,
    /// Wall time from the start of the run to its end.
    pub total: Duration,
    /// The vCPUs' run times added up: what "in guest" and "in VMM" are shares of. With one vCPU
    /// it equals `total`; with several running at once it is more.
    pub vcpu_time: Duration,
}

impl ExitStats {
    pub fn total_exits(&self) -> u64 {
        self.by_reason.values().sum()
    }

    pub fn count_exit(&mut self, reason: &'static str) {
        *self.by_reason.entry(reason).or_default() += 1;
    }

    /// Counts one access to `address` on `bus`, with the name of the device that took it.
    pub fn count_access<T>(
        &mut self,
        bus: &Bus,
        address: u64,
        direction: &'static str,
        access: &Access<T>,
    ) {
        let device = match access {
            Access::Claimed(name, _) => name,
            Access::Unclaimed => UNCLAIMED,
        };
        self.count_at(bus.space(), address, direction, device);
    }

    pub fn count_at(
        &mut self,
        space: AddressSpace,
        address: u64,
        direction: &'static str,
        device: &'static str,
    ) {
        self.by_access
            .entry((space, address, direction))
            .or_insert((device, 0))
            .1 += 1;
    }

    /// Accesses of one port in one direction: the device and the count.
    pub fn accesses_of(&self, port: u64, direction: &str) -> Option<(&'static str, u64)> {
        self.by_access
            .iter()
            .find(|((space, address, dir), _)| {
                *space == AddressSpace::Pio && *address == port && *dir == direction
            })
            .map(|(_, &entry)| entry)
    }

    /// The unclaimed ports accessed in `direction` ("in" or "out"), with their counts.
    pub fn unclaimed_ports(&self, direction: &str) -> Vec<(u16, u64)> {
        self.by_access
            .iter()
            .filter(|((space, _, dir), (device, _))| {
                *space == AddressSpace::Pio && *dir == direction && *device == UNCLAIMED
            })
            .map(|((_, port, _), (_, count))| (*port as u16, *count))
            .collect()
    }

    /// Adds another vCPU's counts: a guest's statistics are those of all its vCPUs.
    pub fn merge(&mut self, other: &ExitStats) {
        for (reason, count) in &other.by_reason {
            *self.by_reason.entry(reason).or_default() += count;
        }
        for (key, (device, count)) in &other.by_access {
            self.by_access.entry(*key).or_insert((device, 0)).1 += count;
        }
        self.in_guest += other.in_guest;
        self.total = self.total.max(other.total);
        self.vcpu_time += other.vcpu_time;
    }

    /// The `--stats` table. `host` names the host's KVM module: the figures mean very different
    /// things under hardware virtualization and under KVM's instruction emulator.
    pub fn table(&self, guest: &str, host: &str) -> String {
        let mut out = String::new();
        let total = self.total_exits();
        let _ = writeln!(out, "VM exits of '{guest}': {total}");
        let _ = writeln!(out, "  host KVM: {host}");
        let _ = writeln!(out, "  {:<20} {:>10}", "by reason", "exits");
        for (reason, count) in &self.by_reason {
            let _ = writeln!(out, "  {reason:<20} {count:>10}");
        }
        let (coalesced, exits): (Vec<_>, Vec<_>) = self
            .by_access
            .iter()
            .partition(|((_, _, direction), _)| *direction == COALESCED);
        for (heading, rows) in [("by port", exits), ("coalesced (no exit)", coalesced)] {
            if rows.is_empty() {
                continue;
            }
            let unit = if heading == "by port" {
                "exits"
            } else {
                "writes"
            };
            let _ = writeln!(out, "  {heading:<20} {unit:>10}  device");
            for ((space, address, direction), (device, count)) in rows {
                let direction = if *direction == COALESCED {
                    "out"
                } else {
                    direction
                };
                let place = match space {
                    AddressSpace::Pio => format!("{address:#06x} {direction}"),
                    AddressSpace::Mmio => format!("{address:#x} {direction}"),
                };
                let _ = writeln!(out, "  {place:<20} {count:>10}  {device}");
            }
        }
        let in_vmm = self.vcpu_time.saturating_sub(self.in_guest);
        let percent = |part: Duration| {
            if self.vcpu_time.is_zero() {
                0.0
            } else {
                100.0 * part.as_secs_f64() / self.vcpu_time.as_secs_f64()
            }
        };
        let time_heading = if self.vcpu_time > self.total {
            "time (all vCPUs)"
        } else {
            "time"
        };
        let _ = writeln!(out, "  {:<20} {:>10}  share", time_heading, "ms");
        let _ = writeln!(
            out,
            "  {:<20} {:>10.3}  {:.1}%",
            "in guest (KVM_RUN)",
            ms(self.in_guest),
            percent(self.in_guest)
        );
        let _ = writeln!(
            out,
            "  {:<20} {:>10.3}  {:.1}%",
            "in VMM",
            ms(in_vmm),
            percent(in_vmm)
        );
        let _ = writeln!(out, "  {:<20} {:>10.3}", "total run time", ms(self.total));
        if total > 0 {
            let _ = writeln!(
                out,
                "  {:<20} {:>10.3}",
                "per exit (avg, us)",
                self.vcpu_time.as_secs_f64() * 1e6 / total as f64
            );
        }
        out
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
