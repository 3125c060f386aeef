// deltahw_sdp_ram: simple dual-port RAM (one synchronous read port, one write port with one
// write enable per lane), initialised from a $readmemh file. Written in the inference template
// Vivado and Yosys map to block RAM; the init file is read at elaboration, so new weights need
// no new RTL: replace the .mem file and re-run synthesis or simulation.
// Read latency: 1 cycle (rdata is registered). Write: on the clock edge, lanes with wen[i] set.
// A read and a write of the same word in the same cycle: the read data are undefined.
module deltahw_sdp_ram #(
    parameter WIDTH = 32,
    parameter DEPTH = 1024,
    parameter ABITS = 10,
    parameter LANES = 4,
    parameter INIT_FILE = ""
) (
    input  wire                 clk,
    input  wire [ABITS-1:0]     raddr,
    output reg  [WIDTH-1:0]     rdata,
    input  wire [ABITS-1:0]     waddr,
    input  wire [WIDTH-1:0]     wdata,
    input  wire [LANES-1:0]     wen
);
    localparam LANE_BITS = WIDTH / LANES;
    // no_rw_check: a read of the word being written in the same cycle may return anything.
    // Without it Yosys emulates the read-old-data rule of this always block with an address
    // compare and a bypass register on every read bit (81 flip-flops and a compare in the read
    // address path per 32-bit RAM on the ECP5: the critical path at 85 MHz). The core never
    // uses such a read: parameters are written only while it is idle (deltahw.regmap), and a
    // run's first read comes cycles after the last write lands (MacArray).
    (* no_rw_check *)
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    integer i;
    initial begin
        if (INIT_FILE != "") $readmemh(INIT_FILE, mem);
    end
    always @(posedge clk) begin
        for (i = 0; i < LANES; i = i + 1)
            if (wen[i]) mem[waddr][i*LANE_BITS +: LANE_BITS] <= wdata[i*LANE_BITS +: LANE_BITS];
        rdata <= mem[raddr];
    end
endmodule
