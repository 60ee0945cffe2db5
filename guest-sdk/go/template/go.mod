module {{crate}}

go 1.26

require kpguest v0.0.0

// The kp SDK, carried in the project (written by `kp new`, matching its kp).
replace kpguest => ./sdk
