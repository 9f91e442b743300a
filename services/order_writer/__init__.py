"""order-writer: Turns approved quotes into confirmed M3 customer orders, creating customers first, exactly once."""
