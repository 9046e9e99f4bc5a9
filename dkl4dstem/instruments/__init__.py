"""Where patterns come from: the Instrument protocol, replay of a 4D file, the measure() time limit."""
