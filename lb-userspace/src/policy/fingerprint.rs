//! A policy's fingerprint: a short hash of the policy as this build understands it, so the two
//! nodes of a pair can be seen at a glance (`xdplb status`, the metrics) to run the same one.
//! Comments, key order, blank lines and defaults written out or left implicit do not change
//! it; anything that changes what the balancer does does.

use sha2::{Digest, Sha256};

use super::Policy;

/// 16 hex digits (64 bits) of SHA-256 over the validated policy.
pub fn fingerprint(policy: &Policy) -> String {
    // The model's Debug form names every field and holds no unordered collection, so equal
    // policies print equally.
    let digest = Sha256::digest(format!("{policy:?}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy;

    const A: &str = "interfaces:\n  - name: eth0\nservices:\n  - name: dicom\n    vip: 198.18.0.100\n    ports: [104]\n    protocol: tcp\n    forwarding: dr\n    reals:\n      - address: 198.18.0.11\n";

    #[test]
    fn formatting_does_not_change_the_fingerprint_but_a_weight_does() {
        let a = policy::parse("a.yaml", A).unwrap();
        let same = format!(
            "# the PACS\n{}        weight: 100\n",
            A.replace("[104]", "[ 104 ]")
        );
        let same = policy::parse("b.yaml", &same).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&same));
        assert_eq!(fingerprint(&a).len(), 16);
        let other = policy::parse("c.yaml", &format!("{A}        weight: 50\n")).unwrap();
        assert_ne!(fingerprint(&a), fingerprint(&other));
    }
}
