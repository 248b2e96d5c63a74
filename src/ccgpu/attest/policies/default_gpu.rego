# ccgpu default EAR policy for NVIDIA GPU evidence verified locally (Trustee's Local nvidia verifier claims).
# input = one gpuN submod's claims ({"nvidia": {arch, uuid, measurements: {index: hex}, config: {...}, checks}});
# the local verifier has no RIMs, so the measurements are compared here with RVPS reference values
# data.reference["gpu_measurement_<index>"].
package policy

import rego.v1

default hardware := 97

hardware := 2 if {
	upper(input.nvidia.arch) in {"HOPPER", "BLACKWELL"}
	input.nvidia["x-nvidia-gpu-attestation-report-signature-verified"] == true
	input.nvidia["x-nvidia-gpu-attestation-report-cert-chain-fwid-match"] == true
	input.nvidia["x-nvidia-gpu-attestation-report-nonce-match"] == true
}

measurements_match if {
	count(input.nvidia.measurements) > 0
	every index, value in input.nvidia.measurements {
		value in data.reference[concat("", ["gpu_measurement_", index])]
	}
}

default executables := 33

executables := 3 if measurements_match

default configuration := 36

configuration := 2 if {
	input.nvidia.config.driver_version in data.reference.allowed_driver_versions
	input.nvidia.config.vbios_version in data.reference.allowed_vbios_versions
}

trust_claims := {
	"executables": executables,
	"hardware": hardware,
	"configuration": configuration,
}
