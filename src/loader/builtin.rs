//! The built-in guests: assembled from `guests/*/*.S` (and the teaching OS built from
//! `guests/os`) by build.rs and embedded in the binary, so `mini-kvm run hello` needs no files.

/// The CPU mode a guest starts in (docs/memory-map.md has the register values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestMode {
    /// 16-bit real mode, loaded at 0x10000 with CS=DS=ES=SS=0x1000.
    Real,
    /// 32-bit protected mode, flat segments; with `paging`, 4 MiB pages mapping RAM at 0 and at
    /// 0x80000000.
    Protected { paging: bool },
    /// 64-bit long mode, RAM identity-mapped with 2 MiB pages.
    Long,
}

impl GuestMode {
    /// How `mini-kvm list` and messages name the mode.
    pub fn name(self) -> &'static str {
        match self {
            GuestMode::Real => "real mode",
            GuestMode::Protected { paging: false } => "protected mode",
            GuestMode::Protected { paging: true } => "protected mode with paging",
            GuestMode::Long => "long mode",
        }
    }
}

/// How a built-in guest starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinKind {
    /// A flat binary, which the VMM starts in this mode.
    Flat(GuestMode),
    /// A kernel: the loader tells its format by its content (the teaching OS is a multiboot
    /// kernel) and starts it as that format says. Without `--mem` it gets `default_memory`.
    Kernel { default_memory: u64 },
}

/// One built-in guest program.
#[derive(Debug)]
pub struct BuiltinGuest {
    pub name: &'static str,
    /// What the guest demonstrates (its source's `# summary:` line).
    pub summary: &'static str,
    pub kind: BuiltinKind,
    /// The image: a flat binary, or a kernel image.
    pub image: &'static [u8],
    /// The ELF file with the guest's symbols, for gdb (`mini-kvm symbols NAME`).
    pub symbols: Option<&'static [u8]>,
}

impl BuiltinGuest {
    /// The mode a flat built-in starts in; `None` for a kernel (its format decides).
    pub fn mode(&self) -> Option<GuestMode> {
        match self.kind {
            BuiltinKind::Flat(mode) => Some(mode),
            BuiltinKind::Kernel { .. } => None,
        }
    }

    /// The RAM this guest gets when `--mem` is not given, if it needs more than the default.
    pub fn default_memory(&self) -> Option<u64> {
        match self.kind {
            BuiltinKind::Flat(_) => None,
            BuiltinKind::Kernel { default_memory } => Some(default_memory),
        }
    }
}

include!(concat!(env!("OUT_DIR"), "/builtin_guests.rs"));

/// Every built-in guest, in `mini-kvm list` order.
pub fn builtin_guests() -> &'static [BuiltinGuest] {
    BUILTIN_GUESTS
}

/// The built-in guest called `name`, if there is one.
pub fn builtin_guest(name: &str) -> Option<&'static BuiltinGuest> {
    BUILTIN_GUESTS.iter().find(|guest| guest.name == name)
}
