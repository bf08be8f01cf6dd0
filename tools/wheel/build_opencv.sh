#!/usr/bin/env bash
# OpenCV reduced to what Caffe uses (core, imgproc, imgcodecs with JPEG and PNG), from this Debian
# release's own source package, built as static PIC libraries into PREFIX; prints PREFIX's CMake
# folder (for -DOpenCV_DIR).
#
#   build_opencv.sh      (CAFFE_CACHE: where the source, the build and its logs go)
#
# Why reduced: Debian's libopencv-dev pulls GDAL, GDCM, OpenEXR, TIFF, WebP, video and GUI
# libraries into every program that links it (308 shared libraries behind libcaffe.so). Caffe only
# decodes, encodes and resizes images (patch 0020 lets it ask for exactly these modules). Static
# libraries: only the functions Caffe calls end up inside libcaffe.so, and the wheel bundles no
# OpenCV library of its own; libjpeg and libpng stay shared (auditwheel bundles them with their
# licences). The prefix is keyed by the source version and this recipe; it appears only when complete.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/setup/common.sh
source "$here/../setup/common.sh"

# Everything but the three modules off; no download at configure time (IPP, ADE, ...): the build is
# offline and reproducible from the source package. Dispatch to AVX2 only (besides the SSE3 baseline):
# resize and colour conversion gain from it; more variants only lengthen the build.
opencv_cmake_flags() {
  echo -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    -DBUILD_LIST=core,imgproc,imgcodecs -DCPU_BASELINE=SSE3 -DCPU_DISPATCH=AVX2 \
    -DWITH_JPEG=ON -DBUILD_JPEG=OFF -DWITH_PNG=ON -DBUILD_PNG=OFF -DBUILD_ZLIB=OFF \
    -DWITH_TIFF=OFF -DWITH_WEBP=OFF -DWITH_OPENJPEG=OFF -DWITH_JASPER=OFF -DWITH_OPENEXR=OFF \
    -DWITH_GDAL=OFF -DWITH_GDCM=OFF -DWITH_IMGCODEC_HDR=OFF -DWITH_IMGCODEC_SUNRASTER=OFF \
    -DWITH_IMGCODEC_PXM=OFF -DWITH_IMGCODEC_PFM=OFF -DWITH_AVIF=OFF -DWITH_SPNG=OFF \
    -DWITH_FFMPEG=OFF -DWITH_GSTREAMER=OFF -DWITH_V4L=OFF -DWITH_1394=OFF -DWITH_GTK=OFF -DWITH_QT=OFF \
    -DWITH_OPENGL=OFF -DWITH_VTK=OFF -DWITH_OPENCL=OFF -DWITH_VA=OFF -DWITH_VA_INTEL=OFF \
    -DWITH_IPP=OFF -DWITH_ITT=OFF -DWITH_TBB=OFF -DWITH_OPENMP=OFF -DWITH_PTHREADS_PF=ON \
    -DWITH_EIGEN=OFF -DWITH_LAPACK=OFF -DWITH_PROTOBUF=OFF -DWITH_ADE=OFF -DWITH_CUDA=OFF \
    -DWITH_QUIRC=OFF -DWITH_CAROTENE=OFF -DWITH_KLEIDICV=OFF -DWITH_FLATBUFFERS=OFF \
    -DBUILD_TESTS=OFF -DBUILD_PERF_TESTS=OFF -DBUILD_EXAMPLES=OFF -DBUILD_DOCS=OFF -DBUILD_opencv_apps=OFF \
    -DBUILD_JAVA=OFF -DBUILD_opencv_python3=OFF -DBUILD_opencv_python2=OFF -DINSTALL_PYTHON_EXAMPLES=OFF \
    -DOPENCV_GENERATE_PKGCONFIG=OFF -DOPENCV_SKIP_PYTHON_LOADER=ON -DCMAKE_INSTALL_LIBDIR=lib
}

main() {
  local suite dsc version recipe prefix log
  suite=$(os_field VERSION_CODENAME)
  [[ -n $suite ]] || die "reading the Debian release" "-" "run this on Debian (a root from tools/portability)"
  dsc=$(fetch_debian_source opencv "" "$suite" OpenCV)
  version=$(debian_source_version "$dsc")
  recipe=$(opencv_cmake_flags | sha256sum | cut -c1-10)
  prefix=$CAFFE_CACHE/opencv-${version//[+:~]/-}-$recipe
  if [[ -f $prefix/.complete ]]; then
    step "OpenCV: cached build $prefix" >&2
    echo "$prefix/lib/cmake/opencv4"
    return
  fi
  staging=$(mktemp -d "$CAFFE_CACHE/opencv-build.XXXXXX")  # (global: the EXIT trap runs after main returns)
  trap 'rm -rf "$staging"' EXIT
  log=$CAFFE_CACHE/logs/opencv.log
  step "OpenCV $version (core, imgproc, imgcodecs; static): unpacking" >&2
  unpack_debian_source "$dsc" "$staging/src" >"$log" 2>&1 || die "unpacking the OpenCV source" "$log" "see the log"
  step "OpenCV: configuring and compiling with $(nproc) jobs (log: $log; about 6 minutes on 2 cores)" >&2
  read -ra flags <<<"$(opencv_cmake_flags | tr '\n' ' ')"
  mkdir "$staging/build"
  {
    (cd "$staging/build" && cmake "${flags[@]}" -DCMAKE_INSTALL_PREFIX="$prefix" "$staging/src") &&
      make -C "$staging/build" -j"$(nproc)" &&
      make -C "$staging/build" install DESTDIR="$staging/dest"
  } >>"$log" 2>&1 || die "building OpenCV" "$log" "the first 'error' in the log names the cause"
  {
    echo "opencv_deb_version=$version"
    echo "cmake_flags=${flags[*]}"
    echo "built=$(date -u +%FT%TZ)"
  } >"$staging/dest$prefix/.complete"
  rm -rf "$prefix"
  mv "$staging/dest$prefix" "$prefix"
  step "OpenCV: installed $prefix" >&2
  echo "$prefix/lib/cmake/opencv4"
}
main "$@"
