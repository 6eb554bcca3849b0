//! Wire tests against bytes from an independent source (etherparse, RFC examples),
//! one test per `check_len` branch, and "new_checked Ok ⇒ no accessor panics"
//! proptests.

mod arp;
mod ethernet;
mod fuzz;
mod icmp;
mod incremental;
mod ipv4;
mod ipv6;
mod tcp;
mod udp;
mod vxlan;

use super::Error;

#[test]
fn every_error_has_a_distinct_description() {
    for (i, a) in Error::ALL.iter().enumerate() {
        assert_eq!(a.to_string(), a.description());
        for b in &Error::ALL[i + 1..] {
            assert_ne!(a.description(), b.description());
        }
    }
}

#[test]
fn ports_reads_the_first_four_bytes_of_a_transport_header() {
    assert_eq!(
        super::ports(&[0x1f, 0x90, 0x00, 0x35, 0xff]),
        Some((8080, 53))
    );
    assert_eq!(super::ports(&[0x1f, 0x90, 0x00]), None);
}

pub(super) const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub(super) const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
pub(super) const IP4_A: [u8; 4] = [10, 244, 1, 5];
pub(super) const IP4_B: [u8; 4] = [10, 96, 0, 10];
pub(super) const IP6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x05];
pub(super) const IP6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x07];
