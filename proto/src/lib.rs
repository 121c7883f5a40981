//! Wire format between the ecg-cluster coordinator and its workers: the `.proto` files under
//! `protos/` compiled by `build.rs`, and nothing else.
//!
//! Layout:
//! - [`v1`]: the generated messages and services of package `ecg.v1`.
//! - [`PROTOCOL_VERSION`]: the version a worker announces and the coordinator checks; the
//!   other constants are the protocol's fixed numbers (chunk size, message limit, versions).
#![warn(missing_docs)]

/// Generated code of package `ecg.v1`.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("ecg.v1");
}

/// Version of the wire protocol; bumped on every incompatible change of `protos/ecg/v1`.
pub const PROTOCOL_VERSION: u32 = 2;

/// The state version of the best model (by validation loss), used to predict the test split.
pub const BEST_VERSION: u64 = u64::MAX;

/// The `have_version` of a worker that holds no state yet.
pub const NO_VERSION: u64 = u64::MAX - 1;

/// Largest piece of a float vector in one message, in bytes, unless the run says otherwise
/// (`RunInfo.chunk_bytes`, from `cluster.chunk_kib`).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Message-size limit set on both ends (decoding and encoding): eight chunks' worth, far above
/// any message of the protocol, far below what would let a peer exhaust memory.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// Metadata key of the cluster token (`Bearer <token>`).
pub const AUTH_METADATA: &str = "authorization";

#[cfg(test)]
mod tests {
    use super::v1;
    use prost::Message;

    #[test]
    fn fingerprint_round_trips_through_the_wire_encoding() {
        let fp = v1::DatasetFingerprint {
            digest: vec![7; 32].into(),
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
