//! Wire format between the ecg-cluster coordinator and its workers: the `.proto` files under
//! `protos/` compiled by `build.rs`, and nothing else.
//!
//! Layout:
//! - [`v1`]: the generated messages and services of package `ecg.v1`.
//! - [`PROTOCOL_VERSION`]: the version a worker announces and the coordinator checks.
#![warn(missing_docs)]

/// Generated code of package `ecg.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("ecg.v1");
}

/// Version of the wire protocol; bumped on every incompatible change of `protos/ecg/v1`.
pub const PROTOCOL_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use super::v1;
    use prost::Message;

    #[test]
    fn fingerprint_round_trips_through_the_wire_encoding() {
        let fp = v1::DatasetFingerprint {
            digest: vec![7; 32],
            n_exams: 345_779,
            n_files: 18,
        };
        let bytes = fp.encode_to_vec();
        let back = v1::DatasetFingerprint::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(back, fp);
        assert_eq!(v1::Split::try_from(3).ok(), Some(v1::Split::Test));
        assert!(
            v1::Split::try_from(9).is_err(),
            "unknown split values are refused"
        );
    }
}
