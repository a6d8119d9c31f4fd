//! Prints the MegatronFineTune CRD as YAML (`make crd` writes it to `crds/`).
fn main() {
    print!("{}", crds::crd::crd_yaml());
}
