module kpplugins

go 1.26

require kpguest v0.0.0

replace kpguest => ../../guest-sdk/go
