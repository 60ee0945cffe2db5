module kpguest

go 1.26
