# ccgpu default KBS resource policy (Trustee's `affirming` sample): release a resource only when there is at
# least one submod and every submod's EAR status is affirming.
# input = the EAR token claims; data = {"plugin", "resource-path": [repo, type, tag], "query"}.
package policy

import rego.v1

default allow := false

allow if {
	count(input.submods) > 0
	every _, submod in input.submods {
		submod["ear.status"] == "affirming"
	}
}
