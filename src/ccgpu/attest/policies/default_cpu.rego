# ccgpu default EAR policy for CPU evidence (SEV-SNP), after Trustee's default_cpu.
# input = the cpu0 submod claims ({"snp": {...}, "report_data", "runtime_data_claims", ...});
# data.reference = the RVPS reference values (Trustee's query_reference_value("<id>") is data.reference["<id>"]).
package policy

import rego.v1

default executables := 33

executables := 3 if {
	input.snp.measurement in data.reference.snp_launch_measurement
}

default hardware := 97

hardware := 2 if {
	input.snp.reported_tcb_bootloader in data.reference.snp_bootloader
	input.snp.reported_tcb_microcode in data.reference.snp_microcode
	input.snp.reported_tcb_snp in data.reference.snp_snp_svn
	input.snp.reported_tcb_tee in data.reference.snp_tee_svn
}

guest_locked_down if {
	input.snp.policy_debug_allowed == false
	input.snp.policy_migrate_ma == false
}

platform_as_expected if {
	input.snp.platform_smt_enabled in data.reference.snp_smt_enabled
	input.snp.platform_tsme_enabled in data.reference.snp_tsme_enabled
	input.snp.policy_abi_major in data.reference.snp_policy_abi_major
	input.snp.policy_single_socket in data.reference.snp_single_socket
}

configuration := 2 if {
	guest_locked_down
	platform_as_expected
} else := 3 if {
	guest_locked_down
} else := 36

trust_claims := {
	"executables": executables,
	"hardware": hardware,
	"configuration": configuration,
}
