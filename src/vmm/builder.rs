//! Building one guest's VM, in the order docs/kvm-api.md walks through: the VM, its RAM and
//! image, the interrupt controllers, the vCPUs and their registers, the firmware tables, and
//! the devices the device manager attaches. A restored VM will be built here too, from saved
//! state instead of an image. Running it is vm.rs's job.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use kvm_bindings::kvm_pit_config;
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use super::coalesced::OutputCoalescing;
use super::debug::{DebugControl, DebugStub, DebugTarget, HostDebugSupport};
use super::device_manager::{AttachedDevices, DeviceInfo, DeviceManager};
use super::kvm;
use super::memory::{create_guest_memory, register_memory_slots};
use super::platform::{attach_devices, attach_display, e820_map, register_display_memory};
use super::seccomp;
use super::snapshot::vcpu_state::{self, VcpuCapabilities};
use super::snapshot::{Machine, Snapshot, SnapshotError, SnapshotTaker, ram, vm_state};
use super::stats::LiveCounters;
use super::vcpu::{Vcpu, VcpuOptions};
use super::vcpu_control::VcpuControl;
use super::virtio::attach_virtio;
use super::vm::{Vm, VmError, ioctl};
use crate::arch::CpuMode;
use crate::arch::x86::acpi;
use crate::arch::x86::layout::REAL_MODE_SEGMENT;
use crate::arch::x86::modes::{
    CR0_PG, EFER_LMA, setup_long_mode, setup_protected_mode, setup_real_mode,
};
use crate::arch::x86::{cpuid, gdt, mptable, paging};
use crate::config::{SnapshotMoment, VmConfig};
use crate::console::GuestIo;
use crate::devices::acpi_pm::POWER_PORTS;
use crate::devices::fw_cfg::{MachineFacts, e820_file};
use crate::devices::hypercall::HypercallHandler;
use crate::devices::virtio::VirtioDevice;
use crate::loader::{self, Entry, GuestMode, LoadOptions};

/// The most vCPUs mini-kvm gives one VM: as many as its MP table describes.
pub const MAX_CPUS: usize = mptable::MAX_CPUS;

/// What one guest brings to the builder besides the [`VmConfig`] every guest of a run shares:
/// its image, and what was worked out or opened for it alone.
pub struct GuestParts<'a> {
    /// The guest's name, for messages.
    pub name: &'a str,
    pub image: &'a [u8],
    /// Its RAM ([`VmConfig::memory_for`]).
    pub memory_size: u64,
    /// The mode of a flat binary ([`VmConfig::flat_mode`]).
    pub flat_mode: Option<GuestMode>,
    /// `--initrd`'s bytes, read once for all guests.
    pub initrd: Option<&'a [u8]>,
    /// Put before each trace line (the guest's label when several guests run), or "".
    pub trace_label: &'a str,
    /// The virtio devices (`--disk`, `--net`, `--rng`), opened, in slot order (vmm/virtio.rs).
    pub virtio: Vec<Box<dyn VirtioDevice>>,
    /// `--gdb`: the debugger front end, listening already (src/gdb/).
    pub debug: Option<Box<dyn DebugStub>>,
    /// `--display`, `--screen-dump`, `--screenshot`: the display adapter (VGA text mode's window
    /// and cursor, the Bochs VBE framebuffer), its memory logged for the view.
    pub display: bool,
}

impl Vm {
    /// Creates the VM, its memory, its devices and its vCPUs, and loads the image: `guest` as
    /// `config` says.
    pub fn create(
        kvm: &Kvm,
        config: &VmConfig,
        guest: GuestParts,
        io: GuestIo,
    ) -> Result<Vm, VmError> {
        // 2. What the host must offer: the hypercall path reads and writes registers through
        // kvm_run (see vcpu.rs); and enough vCPUs.
        if kvm.check_extension_int(Cap::SyncRegs) & 0b11 != 0b11 {
            return Err(VmError::MissingCapability("KVM_CAP_SYNC_REGS"));
        }
        let host_max = kvm.get_max_vcpus();
        if config.cpus == 0 || config.cpus > host_max.min(MAX_CPUS) {
            return Err(VmError::TooManyCpus {
                asked: config.cpus,
                host: host_max,
                ours: MAX_CPUS,
            });
        }

        if config.seccomp {
            seccomp::prepare()?;
        }
        if let Some(request) = &config.snapshot {
            super::snapshot::prepare_dir(&request.dir)?;
        }

        // 3. KVM_CREATE_VM: an empty machine, no memory, no CPUs.
        let vm_fd = Arc::new(kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?);

        // 4. Guest RAM: map it in our process, load the image, give it to KVM (one slot per
        // region: below the MMIO hole, and above 4 GiB).
        let memory = create_guest_memory(guest.memory_size)?;
        let load = LoadOptions {
            flat_mode: guest.flat_mode,
            cmdline: config.cmdline.as_deref(),
            initrd: guest.initrd,
            display: guest.display,
        };
        let entry = loader::load(&memory, guest.name, guest.image, &load)?;
        // (Real mode, the default, goes unmentioned: its traces stay as they were.)
        if config.verbose && entry.mode != GuestMode::Real {
            let _ = writeln!(
                crate::console::stderr::stderr(),
                "mini-kvm: '{}' is a {}: starting in {}",
                guest.name,
                entry.protocol,
                entry.mode.name()
            );
        }
        // With a display, the text buffer's pages get a slot of their own, and the framebuffer
        // one more: both logged, so that the view redraws what changed (devices/display/).
        let display_memory = if guest.display {
            Some(register_display_memory(&vm_fd, &memory)?)
        } else {
            register_memory_slots(&vm_fd, &memory).map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
            None
        };

        // 5. The in-kernel interrupt controllers (PIC, IOAPIC, a local APIC per vCPU) and the PIT.
        // After the memory region, not before: measured on kvm_pvm, open → first KVM_RUN takes
        // ~0.7 ms this way and ~7 ms with the irqchip created first (benches/irqchip_order.rs).
        // Before the vCPUs: KVM gives a vCPU its local APIC only if the irqchip exists.
        let irqchip = entry.mode != GuestMode::Real || config.irqchip || config.cpus > 1;
        if irqchip {
            vm_fd
                .create_irq_chip()
                .map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
            vm_fd
                .create_pit2(kvm_pit_config::default())
                .map_err(ioctl("KVM_CREATE_PIT2"))?;
        }

        // 6-7. KVM_CREATE_VCPU for each CPU, its CPUID, and the boot CPU's registers: the CPU
        // mode the guest starts in. With the irqchip, the other CPUs wait (inside KVM_RUN) for
        // the INIT and SIPI a guest sends them through its local APIC, as on a real PC.
        let vcpu_fds = create_vcpus(kvm, &vm_fd, config.cpus, irqchip)?;
        set_entry_registers(&vcpu_fds[0], &memory, &entry)?;
        // The MP table tells the guest its CPUs and IOAPIC (there is none without the irqchip).
        if irqchip {
            mptable::write(&memory, config.cpus)?;
        }

        // 8. Devices on the buses, with their interrupt lines.
        let mut devices = DeviceManager::new(Arc::clone(&vm_fd), irqchip);
        let e820 = e820_map(&memory, entry.protocol);
        let facts = MachineFacts {
            ram_size: loader::ram_size(&memory),
            // At most MAX_CPUS (181), checked above.
            cpus: config.cpus as u16,
            cmdline: config.cmdline.clone(),
            files: vec![("etc/e820".into(), e820_file(&e820))],
            graphics: guest.display,
        };
        attach_devices(&mut devices, &io, &facts, entry.protocol.is_linux())?;
        let display = match display_memory {
            Some(display_memory) => Some(attach_display(
                &mut devices,
                &memory,
                display_memory,
                entry.video,
            )?),
            None => None,
        };
        attach_virtio(&mut devices, &memory, guest.virtio)?;
        // A Linux kernel learns its CPUs, interrupt controllers and devices from ACPI tables,
        // which firmware would write on a PC: here, now that the devices are known.
        if entry.protocol.is_linux() {
            let described: Vec<_> = devices
                .devices()
                .iter()
                .filter_map(DeviceInfo::acpi_device)
                .collect();
            acpi::write(&memory, config.cpus, &described, POWER_PORTS)?;
        }
        let coalescing = if config.coalesce && kvm.check_extension(Cap::CoalescedPio) {
            OutputCoalescing::new(&vm_fd, devices.coalesced_ports())
        } else {
            None
        };
        let AttachedDevices {
            buses,
            devices: device_info,
            event_handlers,
        } = devices.finish();
        let buses = Arc::new(buses);

        let live = Arc::new(LiveCounters::default());
        let control = VcpuControl::shared(config.cpus);
        let debugger = guest.debug.map(|stub| {
            let control = Arc::new(DebugControl::new(
                config.cpus,
                host_debug_support(kvm),
                super::vcpus::kick_thread,
            ));
            let target = DebugTarget {
                name: guest.name.to_string(),
                control,
                widest_mode: widest_mode(guest.image, &entry),
                seccomp: config.seccomp,
            };
            (stub, target)
        });
        // `--snapshot DIR`: vCPU 0 (the only one) saves the guest when the moment comes.
        let mut snapshot = match &config.snapshot {
            Some(request) => Some(SnapshotTaker {
                dir: request.dir.clone(),
                seen: match &request.moment {
                    SnapshotMoment::Output(text) => Some(io.output.watch_for(text.as_bytes())),
                    SnapshotMoment::Exits(_) => None,
                },
                after_exits: match request.moment {
                    SnapshotMoment::Exits(count) => Some(count),
                    SnapshotMoment::Output(_) => None,
                },
                vm_fd: Arc::clone(&vm_fd),
                machine: Machine {
                    guest: guest.name.to_string(),
                    ram: ram::regions(&memory),
                    irqchip,
                    linux: entry.protocol.is_linux(),
                    cmdline: config.cmdline.clone(),
                    e820: Machine::e820_entries(&e820),
                },
                capabilities: vcpu_capabilities(kvm, irqchip)?,
                input: io.input.clone(),
            }),
            None => None,
        };
        let started = Instant::now();
        let several = config.cpus > 1;
        let mut vcpus = Vec::with_capacity(config.cpus);
        for (index, mut fd) in vcpu_fds.into_iter().enumerate() {
            // Every vCPU maps the VM's coalesced ring, to drain it after its own exits.
            let coalescing = coalescing
                .clone()
                .filter(|_| fd.map_coalesced_mmio_ring().is_ok());
            let trace_label = if several {
                format!("{}[cpu {index}] ", guest.trace_label)
            } else {
                guest.trace_label.to_string()
            };
            let hypercalls = HypercallHandler::new(
                memory.clone(),
                io.output.clone(),
                io.input.clone(),
                started,
                config.verbose.then(|| trace_label.clone()),
            );
            let options = VcpuOptions {
                trace: config.verbose.then_some(trace_label),
                coalescing,
                debug: debugger
                    .as_ref()
                    .map(|(_, target)| Arc::clone(&target.control)),
                snapshot: snapshot.take(),
            };
            vcpus.push(Vcpu::new(
                index,
                fd,
                memory.clone(),
                Arc::clone(&buses),
                hypercalls,
                Arc::clone(&control),
                options,
                Arc::clone(&live),
            ));
        }
        Ok(Vm {
            name: guest.name.to_string(),
            _vm_fd: vm_fd,
            vcpus,
            control,
            devices: device_info,
            event_handlers,
            output: io.output,
            input: io.input,
            live,
            seccomp: config.seccomp,
            linux_memory: entry.protocol.is_linux().then_some(memory),
            debugger,
            display,
        })
    }
}

/// What the host's KVM saves of a vCPU besides the basics (a snapshot's parts).
fn vcpu_capabilities(kvm: &Kvm, irqchip: bool) -> Result<VcpuCapabilities, VmError> {
    let msrs = kvm
        .get_msr_index_list()
        .map_err(ioctl("KVM_GET_MSR_INDEX_LIST"))?;
    Ok(VcpuCapabilities {
        msr_indices: msrs.as_slice().to_vec(),
        xsave: kvm.check_extension(Cap::Xsave),
        xcrs: kvm.check_extension(Cap::Xcrs),
        lapic: irqchip,
    })
}

impl Vm {
    /// Builds the VM a snapshot saved (vmm/snapshot/, [`snapshot::load`] checked it), from
    /// `dir`: the same machine as [`Vm::create`] makes, in the same order, with saved state
    /// where `create` loads an image and sets the entry registers. Guest RAM is the snapshot's
    /// file, mapped copy-on-write: nothing is copied.
    ///
    /// [`snapshot::load`]: super::snapshot::load
    pub fn restore(
        kvm: &Kvm,
        config: &VmConfig,
        dir: &std::path::Path,
        saved: &Snapshot,
        io: GuestIo,
    ) -> Result<Vm, VmError> {
        if kvm.check_extension_int(Cap::SyncRegs) & 0b11 != 0b11 {
            return Err(VmError::MissingCapability("KVM_CAP_SYNC_REGS"));
        }
        if config.seccomp {
            seccomp::prepare()?;
        }
        let machine = &saved.machine;
        let vm_fd = Arc::new(kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?);
        let memory = ram::map(&dir.join(super::snapshot::RAM_FILE), &machine.ram)?;
        register_memory_slots(&vm_fd, &memory).map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;

        // The interrupt controllers and the PIT, made as `create` makes them, then set.
        match (&saved.vm, machine.irqchip) {
            (Some(state), true) => {
                vm_fd
                    .create_irq_chip()
                    .map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
                vm_fd
                    .create_pit2(kvm_pit_config::default())
                    .map_err(ioctl("KVM_CREATE_PIT2"))?;
                vm_state::restore(&vm_fd, state)?;
            }
            (None, false) => {}
            _ => {
                return Err(SnapshotError::Invalid(
                    "\"irqchip\" and \"vm\" disagree: the VM's state is there without the \
                     irqchip, or missing with it"
                        .into(),
                )
                .into());
            }
        }
        let vcpu_fds = create_vcpus(kvm, &vm_fd, 1, machine.irqchip)?;
        vcpu_state::restore_cpuid(&vcpu_fds[0], &saved.vcpus[0])?;
        vcpu_state::restore(&vcpu_fds[0], &saved.vcpus[0])?;

        let mut devices = DeviceManager::new(Arc::clone(&vm_fd), machine.irqchip);
        let facts = MachineFacts {
            ram_size: loader::ram_size(&memory),
            cpus: 1,
            cmdline: machine.cmdline.clone(),
            files: vec![("etc/e820".into(), e820_file(&machine.e820_map()))],
            graphics: false,
        };
        // Input typed ahead of the guest goes first; checked at load (at most INPUT_BUFFER).
        io.input.put_back(&saved.input);
        attach_devices(&mut devices, &io, &facts, machine.linux)?;
        // The virtio slots, all empty (a snapshot has no virtio device yet).
        attach_virtio(&mut devices, &memory, Vec::new())?;
        let coalescing = if config.coalesce && kvm.check_extension(Cap::CoalescedPio) {
            OutputCoalescing::new(&vm_fd, devices.coalesced_ports())
        } else {
            None
        };
        let AttachedDevices {
            buses,
            devices: device_info,
            event_handlers,
        } = devices.finish();
        restore_devices(&buses, saved)?;
        let buses = Arc::new(buses);

        let live = Arc::new(LiveCounters::default());
        let control = VcpuControl::shared(1);
        // The CLOCK hypercall goes on from where it was.
        let clock = std::time::Duration::from_nanos(saved.hypercall_clock_ns);
        let started = Instant::now()
            .checked_sub(clock)
            .unwrap_or_else(Instant::now);
        let mut vcpus = Vec::with_capacity(1);
        for (index, mut fd) in vcpu_fds.into_iter().enumerate() {
            let coalescing = coalescing
                .clone()
                .filter(|_| fd.map_coalesced_mmio_ring().is_ok());
            let hypercalls = HypercallHandler::new(
                memory.clone(),
                io.output.clone(),
                io.input.clone(),
                started,
                config.verbose.then(String::new),
            );
            let options = VcpuOptions {
                trace: config.verbose.then(String::new),
                coalescing,
                debug: None,
                snapshot: None,
            };
            vcpus.push(Vcpu::new(
                index,
                fd,
                memory.clone(),
                Arc::clone(&buses),
                hypercalls,
                Arc::clone(&control),
                options,
                Arc::clone(&live),
            ));
        }
        Ok(Vm {
            name: machine.guest.clone(),
            _vm_fd: vm_fd,
            vcpus,
            control,
            devices: device_info,
            event_handlers,
            output: io.output,
            input: io.input,
            live,
            seccomp: config.seccomp,
            linux_memory: machine.linux.then_some(memory),
            debugger: None,
            display: None,
        })
    }
}

/// Gives each device of a restored machine its saved state, by name: the snapshot must name
/// exactly the devices the machine has.
fn restore_devices(buses: &super::exit::Buses, saved: &Snapshot) -> Result<(), SnapshotError> {
    let attached: Vec<_> = buses
        .pio
        .devices()
        .into_iter()
        .chain(buses.mmio.devices())
        .collect();
    for (name, device) in &attached {
        let Some(state) = saved.devices.get(*name) else {
            return Err(SnapshotError::Invalid(format!(
                "it has no state for the {name} device"
            )));
        };
        if !state.is_null() {
            device
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .restore_state(state)
                .map_err(|reason| SnapshotError::Invalid(format!("the {name} device: {reason}")))?;
        }
    }
    if let Some(name) = saved
        .devices
        .keys()
        .find(|name| !attached.iter().any(|(attached, _)| attached == name))
    {
        return Err(SnapshotError::Invalid(format!(
            "it has a {name} device, which this machine does not have"
        )));
    }
    Ok(())
}

/// The widest mode a guest runs in, as far as its image tells: a 64-bit ELF file or a Linux
/// kernel goes to long mode even when it starts in protected mode. (gdb's register set.)
fn widest_mode(image: &[u8], entry: &Entry) -> CpuMode {
    const ELF64: &[u8] = b"\x7fELF\x02";
    match entry.mode {
        GuestMode::Long => CpuMode::Long64,
        _ if entry.protocol.is_linux() || image.starts_with(ELF64) => CpuMode::Long64,
        GuestMode::Real => CpuMode::Real,
        GuestMode::Protected { .. } => CpuMode::Protected32,
    }
}

/// What the host's KVM offers a debugger (docs/gdb.md): tried in scratch VMs, as KVMs differ
/// (kvm_pvm stops at neither `int3` nor a watchpoint, but at a debug register's instruction).
fn host_debug_support(kvm: &Kvm) -> HostDebugSupport {
    let flags = kvm.check_extension_raw(kvm_bindings::KVM_CAP_SET_GUEST_DEBUG2.into()) as u32;
    HostDebugSupport {
        probed: super::debug::probe_debug_support(kvm),
        block_irq: flags & kvm_bindings::KVM_GUESTDBG_BLOCKIRQ != 0,
    }
}

/// The vCPUs, each with its CPUID (its APIC ID in it) when the guest has more than real mode.
fn create_vcpus(
    kvm: &Kvm,
    vm_fd: &VmFd,
    count: usize,
    irqchip: bool,
) -> Result<Vec<VcpuFd>, VmError> {
    let supported = if irqchip || count > 1 {
        Some(cpuid::supported_cpuid(kvm).map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?)
    } else {
        None
    };
    (0..count)
        .map(|index| {
            let fd = vm_fd
                .create_vcpu(index as u64)
                .map_err(ioctl("KVM_CREATE_VCPU"))?;
            if let Some(supported) = &supported {
                let table = cpuid::for_vcpu(supported, index as u32, count as u32);
                fd.set_cpuid2(&table).map_err(ioctl("KVM_SET_CPUID2"))?;
            }
            Ok(fd)
        })
        .collect()
}

/// Writes the tables the entry mode needs (GDT, TSS, page tables) and sets the vCPU's registers.
fn set_entry_registers(
    vcpu_fd: &VcpuFd,
    memory: &GuestMemoryMmap,
    entry: &Entry,
) -> Result<(), VmError> {
    let mut sregs = vcpu_fd.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    let mut regs = vcpu_fd.get_regs().map_err(ioctl("KVM_GET_REGS"))?;
    let ram_size = loader::ram_size(memory);
    match entry.mode {
        GuestMode::Real => setup_real_mode(&mut sregs, &mut regs, REAL_MODE_SEGMENT),
        GuestMode::Protected { paging } => {
            gdt::write_gdt_and_tss(memory)?;
            let page_directory = if paging {
                Some(paging::write_pse_tables(memory, ram_size)?)
            } else {
                None
            };
            setup_protected_mode(&mut sregs, &mut regs, &entry.registers, page_directory);
        }
        GuestMode::Long => {
            gdt::write_gdt_and_tss(memory)?;
            let pml4 = paging::write_long_mode_tables(memory, ram_size)?;
            setup_long_mode(&mut sregs, &mut regs, &entry.registers, pml4);
        }
    }
    vcpu_fd.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    vcpu_fd.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;

    // KVM_SET_SREGS does not fail when the host cannot do 32-bit paging: kvm_pvm silently drops
    // CR0.PG outside long mode. Read it back, and refuse to start a guest that would not run.
    if sregs.cr0 & CR0_PG != 0 && sregs.efer & EFER_LMA == 0 {
        let actual = vcpu_fd.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        if actual.cr0 & CR0_PG == 0 {
            return Err(VmError::NoPagingSupport {
                module: kvm::HostKvm::detect().module(),
            });
        }
    }
    Ok(())
}
