#!/bin/bash
# gRPC channel arguments on top of tpserve's (channel_tuning.h): unary Echo at the seed sizes
# (590 KB in, 295 KB out) through grpc-echo-probe, each setting on both ends, three interleaved rounds.
# Run on the GPU machine: tools/gpu/probe_channel_args.sh BUNDLE (bin/grpc-echo-probe + libs/; a
# folder or a tarball, tools/gpu/bundle.sh).
bundle=${1:?usage: probe_channel_args.sh BUNDLE}
# shellcheck source=tools/gpu/bundle.sh
. "$(dirname "$0")/bundle.sh"
use_bundle "$bundle" new || exit 1
export LD_LIBRARY_PATH=/tmp/tp-new/libs; P=/tmp/tp-new/bin/grpc-echo-probe
R="grpc.experimental.tcp_read_chunk_size 1048576 grpc.experimental.tcp_min_read_chunk_size 1048576 grpc.experimental.tcp_max_read_chunk_size 4194304"
F="grpc.http2.max_frame_size 4194304"; L="grpc.http2.lookahead_bytes 4194304"; W="grpc.http2.write_buffer_size 4194304"; B="grpc.http2.bdp_probe 0"
port=52001
for rep in 1 2 3; do
  for name in base frame lookahead frame+lookahead write frame+lookahead+write nobdp+lookahead; do
    case $name in
      base) a="" ;; frame) a="$F" ;; lookahead) a="$L" ;; frame+lookahead) a="$F $L" ;; write) a="$W" ;;
      frame+lookahead+write) a="$F $L $W" ;; nobdp+lookahead) a="$B $L" ;;
    esac
    port=$((port + 1))
    MALLOC=tuned $P server 127.0.0.1:$port $R $a & e=$!
    sleep 0.4
    echo "$rep $name: $(MALLOC=tuned CALLS=1500 $P client 127.0.0.1:$port $R $a)"
    kill $e; wait $e 2>/dev/null
  done
done
