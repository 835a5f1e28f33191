//! The machine: one [`vm::Vm`] per guest, with its memory, its vCPUs and its devices.
//!
//! - `kvm.rs`: the /dev/kvm handle; `memory.rs`: guest RAM and its memory slots;
//! - `builder.rs`: building a machine in a short, readable order; `vm.rs`: running it and
//!   deciding how it ended; `event_loop.rs`: the epoll loop that watches it run;
//! - `vcpus.rs`, `vcpu.rs`, `vcpu_control.rs`, `exit.rs`: the vCPU threads, their run loop, the
//!   pause/stop requests they share, and the decision per exit;
//! - `device_manager.rs`, `coalesced.rs`: attaching devices, and KVM's coalesced-I/O ring;
//! - `platform.rs`: the PC's devices every guest has, and the display adapter;
//! - `virtio.rs`: the virtio slots, their doorbells (ioeventfd) and interrupts (irqfd);
//! - `outcome.rs`, `cpu_report.rs`, `stats.rs`: how a guest ended, its registers, its exit counts;
//! - `group.rs`: several guests at once, each its own VM;
//! - `seccomp.rs`: the system calls each thread may make once the guest runs;
//! - `snapshot/`: a guest saved to a directory, and the checks before one is restored
//!   (builder.rs builds the restored VM).

pub mod builder;
pub mod coalesced;
pub mod cpu_report;
pub mod debug;
pub mod device_manager;
pub mod event_loop;
pub mod exit;
pub mod group;
pub mod kvm;
pub mod memory;
pub mod outcome;
pub mod platform;
pub mod seccomp;
pub mod snapshot;
pub mod stats;
pub mod vcpu;
pub mod vcpu_control;
pub mod vcpus;
pub mod virtio;
pub mod vm;
