//! Several guests at once. Each is its own KVM VM (its own memory, devices and vCPU thread), so
//! one guest can never see another's memory: the isolation is KVM's, not address arithmetic.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::Duration;

use super::builder::GuestParts;
use super::debug::DebugStub;
use super::seccomp::{self, Role};
use super::stats::LiveCounters;
use super::vm::{RunReport, Vm, VmError};
use crate::config::RunConfig;
use crate::console::GuestIo;
use crate::devices::virtio::VirtioDevice;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::net::{self, Net};
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::tap::Tap;
use crate::loader::{FileRole, read_file};

/// Makes guest `index`'s debugger front end (named `name`), listening already; `Ok(None)`
/// without one.
pub type StubMaker<'a> = dyn Fn(usize, &str) -> Result<Option<Box<dyn DebugStub>>, String> + 'a;

/// How one guest of a group ended.
pub struct GuestResult {
    pub name: String,
    /// `Err` only when mini-kvm itself failed for this guest (a thread that could not start).
    pub report: Result<RunReport, VmError>,
}

/// The VMs of one run, created and ready.
pub struct Group {
    vms: Vec<Vm>,
    /// With several guests, the thread that waits for them takes the waiter's filter too.
    seccomp: bool,
}

impl Group {
    /// Reads every image and creates every VM before any guest runs: a bad image or a KVM
    /// error stops the whole run before a guest has printed anything. `debugger` makes each
    /// guest's debugger front end, listening (`--gdb`: src/gdb/), from its index and name.
    pub fn create(
        config: &RunConfig,
        consoles: Vec<GuestIo>,
        debugger: &StubMaker<'_>,
    ) -> Result<Group, VmError> {
        // Images and flags first: a typo in a path is reported before anything about KVM.
        let mut images = Vec::with_capacity(config.guests.len());
        for guest in &config.guests {
            let memory = config.vm.memory_for(guest);
            images.push((
                guest.bytes(memory, config.timeout)?,
                config.vm.flat_mode(guest)?,
            ));
        }
        // The initramfs, read once for all guests, under the same bounds as an image.
        let initrd = match &config.vm.initrd {
            Some(path) => Some(read_file(
                FileRole::Initramfs,
                path,
                config.vm.memory_for_initrd(),
                config.timeout,
            )?),
            None => None,
        };
        // Disk images are opened (and locked) now, for the one guest that may have them.
        let mut disks = Vec::with_capacity(config.vm.disks.len());
        for disk in &config.vm.disks {
            disks.push(Block::open(&disk.path, disk.read_only)?);
        }
        let mut disks = Some(disks);
        // And the TAP devices: their errors (no permission) before anything runs.
        let mut nets = Vec::with_capacity(config.vm.nets.len());
        for net in &config.vm.nets {
            let tap = Tap::open(&net.tap, net::HEADER_SIZE)?;
            nets.push(Net::new(tap, net.mac.unwrap_or_else(net::random_mac)));
        }
        let mut nets = Some(nets);
        let labelled = config.guests.len() > 1;
        let kvm = super::kvm::shared_kvm()?;
        let mut vms = Vec::with_capacity(config.guests.len());
        for (index, ((guest, (image, flat_mode)), io)) in
            config.guests.iter().zip(&images).zip(consoles).enumerate()
        {
            let name = guest.name();
            let trace_label = if labelled {
                format!("[{}:{name}] ", index + 1)
            } else {
                String::new()
            };
            let mut virtio: Vec<Box<dyn VirtioDevice>> = Vec::new();
            for disk in disks.take().unwrap_or_default() {
                virtio.push(Box::new(disk));
            }
            for net in nets.take().unwrap_or_default() {
                virtio.push(Box::new(net));
            }
            if config.vm.rng {
                virtio.push(Box::new(Rng::new()));
            }
            let debug = debugger(index, &name).map_err(VmError::Debugger)?;
            let parts = GuestParts {
                name: &name,
                image,
                memory_size: config.vm.memory_for(guest),
                flat_mode: *flat_mode,
                initrd: initrd.as_deref(),
                trace_label: &trace_label,
                virtio,
                debug,
                display: config.display_on(),
            };
            vms.push(Vm::create(kvm, &config.vm, parts, io)?);
        }
        Ok(Group {
            vms,
            seccomp: config.vm.seccomp,
        })
    }

    /// Each guest's display (with `--display` and the like), for a view that shows it.
    pub fn displays(&self) -> Vec<Option<crate::devices::display::Display>> {
        self.vms.iter().map(Vm::display).collect()
    }

    /// Each guest's name and live counters, for a view that watches the run.
    pub fn live_counters(&self) -> Vec<(String, Arc<LiveCounters>)> {
        self.vms
            .iter()
            .map(|vm| (vm.name().to_string(), vm.live_counters()))
            .collect()
    }

    /// Runs every guest at once, each on its own threads, until all have ended. A guest that
    /// faults or times out ends alone; the others go on. Setting `cancel` (or `quit`: Ctrl-A x)
    /// stops them all.
    pub fn run(
        self,
        timeout: Option<Duration>,
        cancel: &AtomicBool,
        quit: &AtomicBool,
    ) -> Vec<GuestResult> {
        if self.vms.len() == 1 {
            // One guest: its event loop runs on this thread (a thread less to start per VM).
            return self
                .vms
                .into_iter()
                .map(|vm| GuestResult {
                    name: vm.name().to_string(),
                    report: vm.run(timeout, cancel, quit),
                })
                .collect();
        }
        thread::scope(|scope| {
            let running: Vec<_> = self
                .vms
                .into_iter()
                .map(|vm| {
                    let name = vm.name().to_string();
                    (name, scope.spawn(move || vm.run(timeout, cancel, quit)))
                })
                .collect();
            // This thread only waits and reports from now on.
            if self.seccomp {
                seccomp::install_or_exit(Role::Waiter);
            }
            running
                .into_iter()
                .map(|(name, thread)| GuestResult {
                    report: thread
                        .join()
                        .unwrap_or_else(|_| Err(VmError::VcpuPanicked(name.clone()))),
                    name,
                })
                .collect()
        })
    }
}

/// The status of a whole run: 0 when every guest ended with 0, otherwise the first non-zero
/// status in guest order (a guest mini-kvm failed to run counts as 1).
pub fn group_exit_code(results: &[GuestResult]) -> u8 {
    results
        .iter()
        .map(|result| match &result.report {
            Ok(report) => report.outcome.exit_code(),
            Err(_) => super::outcome::exit_code::SETUP_ERROR,
        })
        .find(|&status| status != 0)
        .unwrap_or(0)
}

/// The end-of-run table of a multi-guest run: each guest's status, and with `stats` its exits.
pub fn summary_table(results: &[GuestResult], stats: bool) -> String {
    let labels: Vec<String> = results
        .iter()
        .enumerate()
        .map(|(index, result)| format!("[{}:{}]", index + 1, result.name))
        .collect();
    let width = labels.iter().map(String::len).max().unwrap_or(5).max(5);
    let mut table = format!("{:<width$}  {:>6}", "guest", "status");
    if stats {
        table.push_str(&format!("  {:>10}", "VM exits"));
    }
    table.push_str("  how it ended\n");
    for (label, result) in labels.iter().zip(results) {
        let (status, description, exits) = match &result.report {
            Ok(report) => (
                report.outcome.exit_code(),
                report.outcome.short_description(),
                report.stats.total_exits().to_string(),
            ),
            Err(error) => (
                super::outcome::exit_code::SETUP_ERROR,
                format!("mini-kvm error: {error}"),
                "-".to_string(),
            ),
        };
        table.push_str(&format!("{label:<width$}  {status:>6}"));
        if stats {
            table.push_str(&format!("  {exits:>10}"));
        }
        table.push_str(&format!("  {description}\n"));
    }
    table
}
