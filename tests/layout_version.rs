//! A build never adopts maps pinned with another layout: it refuses before touching them and
//! says what to do.

use xdplb::dataplane::loader;
use xdplb_tests::fixture::Dataplane;

const POLICY: &str = "
interfaces:
  - name: lo
services:
  - name: dicom
    vip: 198.18.0.100
    ports: [104]
    protocol: tcp
    forwarding: dr
    reals:
      - address: 198.18.0.11
";

#[test]
fn the_same_layout_is_adopted_and_another_refused_with_advice() {
    let mut dp = Dataplane::new(POLICY, &[]);
    // The same build adopts its own pins (a restart).
    let again = loader::load(dp.pin_dir()).expect("adopting pins of the same layout");
    drop(again);

    // Pins written by a build with layout 3.
    dp.loaded.maps.meta.set(0, 3, 0).unwrap();
    let error = match loader::load(dp.pin_dir()) {
        Ok(_) => panic!("pins of layout 3 were adopted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("layout 3"), "{error}");
    assert!(
        error.contains(&format!("layout {}", lb_common::LAYOUT_VERSION)),
        "{error}"
    );
    assert!(error.contains("xdplb down --pin-dir"), "{error}");
    // Refused before touching anything: the pinned maps still hold the old marker.
    assert_eq!(dp.loaded.maps.meta.get(&0, 0).unwrap(), 3);
}
