//! Hex text for the parts of a snapshot that are KVM's own binary structures (the local APIC's
//! page, the PIT's channels): the state file stays text, and each part keeps KVM's exact bytes.
//! Registers a person wants to read are written by name instead (vcpu_state.rs).

use zerocopy::{FromBytes, Immutable, IntoBytes};

/// `bytes` as lowercase hex, two digits a byte.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The bytes of `text`, or why it is not hex.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("an odd number of hex digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|at| {
            u8::from_str_radix(text.get(at..at + 2).unwrap_or("?"), 16)
                .map_err(|_| format!("'{}' is not hex", text.get(at..at + 2).unwrap_or("?")))
        })
        .collect()
}

/// A KVM structure as hex.
pub fn of<T: IntoBytes + Immutable>(value: &T) -> String {
    encode(value.as_bytes())
}

/// A KVM structure from hex: exactly its size in bytes.
pub fn parse<T: FromBytes>(text: &str) -> Result<T, String> {
    let bytes = decode(text)?;
    T::read_from_bytes(&bytes).map_err(|_| {
        format!(
            "{} bytes where {} were expected",
            bytes.len(),
            std::mem::size_of::<T>()
        )
    })
}

/// serde helpers for a u64 written as "0x..." (registers read better in hex).
pub mod u64_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{value:#x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        let digits = text.strip_prefix("0x").ok_or_else(|| {
            serde::de::Error::custom(format!("'{text}' is not a hex number (0x...)"))
        })?;
        u64::from_str_radix(digits, 16)
            .map_err(|_| serde::de::Error::custom(format!("'{text}' is not a hex number")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_what_is_not_hex() {
        assert_eq!(encode(&[0x00, 0xab, 0x10]), "00ab10");
        assert_eq!(decode("00ab10"), Ok(vec![0x00, 0xab, 0x10]));
        assert_eq!(decode("abc"), Err("an odd number of hex digits".into()));
        assert_eq!(decode("zz"), Err("'zz' is not hex".into()));
        let clock = kvm_bindings::kvm_clock_data {
            clock: 0x1234,
            ..Default::default()
        };
        let text = of(&clock);
        assert_eq!(
            parse::<kvm_bindings::kvm_clock_data>(&text).unwrap().clock,
            0x1234
        );
        assert_eq!(
            parse::<kvm_bindings::kvm_clock_data>("00").err(),
            Some(format!(
                "1 bytes where {} were expected",
                std::mem::size_of::<kvm_bindings::kvm_clock_data>()
            ))
        );
    }
}
