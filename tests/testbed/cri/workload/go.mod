module strata.invalid/testbed/criworkload

go 1.22
