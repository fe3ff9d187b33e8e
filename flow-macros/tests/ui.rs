//! Compile-time behaviour of `#[flow]`: valid flows compile (and their graphs are checked at
//! run time of the test binary), every kind of invalid flow fails with the committed message.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/pass/*.rs");
    t.compile_fail("tests/ui/*.rs");
}
